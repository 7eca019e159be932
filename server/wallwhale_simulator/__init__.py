"""A Steam to run WallWhale against without a Steam account: the demo (`scripts/run.sh --demo`) and the tests.

`depotdownloader` is a DepotDownloader executable (the real tool's command line, output, prompts, exit
codes and files) that plays Steam from a world file; `steam` writes that world and the launcher;
`webapi` serves Steam's Web API (GetPublishedFileDetails, GetCollectionDetails) from the same world;
`catalog` is the demo's world; `cli` runs it all (`wallwhale-steam-simulator`). The server is not told:
it is pointed at the launcher and the Web API URL like at the real ones. Standard library only.
"""
