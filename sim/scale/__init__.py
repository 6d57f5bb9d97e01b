"""Beyond one process: shards on one machine, a cluster of machines, capacity search."""
