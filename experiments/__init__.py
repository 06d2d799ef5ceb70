"""The `tsuite` command line, experiment configs, callbacks and comparison tools."""
