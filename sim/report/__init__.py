"""Load-test reports: the run-wide collector, summary.json, calls.csv, timeseries.csv, plots."""
