"""Drivers of the sans-IO endpoint: the asyncio / uvloop datagram server, impairment, capture."""
