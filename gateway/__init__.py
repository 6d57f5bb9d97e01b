"""iaxgw gateway: sans-IO IAX2 protocol core, datagram server, Asterisk configs, dialplan, CLI."""

__version__ = "0.1.0"
