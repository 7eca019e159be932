import sys

from wallwhale_client.cli.main import main

sys.exit(main())
