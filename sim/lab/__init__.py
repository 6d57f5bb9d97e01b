"""The Asterisk 22 lab: provisioning, site configs, capture, baselines, side-by-side runs."""
