"""The load generator: ``iaxgw loadtest`` in one process, its calls, media and measurement."""
