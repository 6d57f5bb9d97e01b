"""``iaxgw serve``, ``iaxgw show`` and ``iaxgw ctl``: the long-running gateway and its tooling."""
