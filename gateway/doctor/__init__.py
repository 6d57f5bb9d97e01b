"""The trunk doctor: ``iaxgw check`` (configs) and ``iaxgw probe`` (a live peer)."""
