"""Configuration: Asterisk-format files read into the model the core and the tools share."""
