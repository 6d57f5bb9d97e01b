"""The sans-IO IAX2 core: the endpoint and the parts that own its state (no sockets, no clock)."""
