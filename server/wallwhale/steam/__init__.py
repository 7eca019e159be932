"""Everything that talks to Steam: the DepotDownloader runner and its output, workshop ids, Web API."""
