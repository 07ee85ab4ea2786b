"""Write the OpenAPI document the server generates (the same as GET /api/v1/openapi.json)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oms.settings")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="openapi.json")
    args = parser.parse_args()
    import django

    django.setup()
    from oms.api import api

    schema = api.get_openapi_schema(path_prefix="/api/v1/")
    Path(args.output).write_text(json.dumps(schema, indent=2, sort_keys=True, default=str) + "\n")
    print(f"wrote {args.output}: {len(schema['paths'])} paths")
    return 0


if __name__ == "__main__":
    sys.exit(main())
