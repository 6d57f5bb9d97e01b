"""iaxgw gateway: the sans-IO IAX2 protocol core, the datagram server, Asterisk configs, dialplan, CLI."""

__version__ = "0.1.0"
