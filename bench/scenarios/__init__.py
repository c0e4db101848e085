"""One module per scenario of issue 7; each returns result rows."""
