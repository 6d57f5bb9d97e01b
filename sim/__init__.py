"""iaxgw sim: load generation, media, measurement and reports; the Asterisk lab."""
