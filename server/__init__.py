"""The Shoal process: settings, lifecycle, the Database/Collection services and the CLI."""
