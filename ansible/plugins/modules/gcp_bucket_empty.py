#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Delete every object of a Cloud Storage bucket, page by page, in parallel."""

from __future__ import annotations

DOCUMENTATION = r"""
module: gcp_bucket_empty
short_description: Delete all objects of a Cloud Storage bucket
description:
  - Lists the bucket through every page (1,000 objects a page, following
    nextPageToken) and deletes the objects with I(workers) parallel
    requests. A missing bucket or object is not an error.
options:
  bucket_url:
    description: https://storage.googleapis.com/storage/v1/b/BUCKET
    type: str
    required: true
  access_token:
    type: str
    required: true
  workers:
    description: Parallel DELETE requests.
    type: int
    default: 16
"""

import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

from ansible.module_utils.gcp_rest import GcpError, GcpRest, gcp_module


def main():
    module = gcp_module(
        {
            "bucket_url": {"type": "str", "required": True},
            "workers": {"type": "int", "default": 16},
        },
        supports_check_mode=True,
    )
    p = module.params
    url = p["bucket_url"].rstrip("/")
    started = time.monotonic()
    deleted = 0
    pages = 0
    try:
        rest = GcpRest(p["access_token"])
        clients = [GcpRest(p["access_token"]) for _ in range(p["workers"])]

        def delete(args):
            i, name = args
            clients[i % len(clients)].call(
                "DELETE", "%s/o/%s" % (url, quote(name, safe="")), ok=(200, 204, 404)
            )

        token = None
        with ThreadPoolExecutor(max_workers=p["workers"]) as pool:
            while True:
                page = "%s/o?maxResults=1000&fields=items(name),nextPageToken" % url
                if token:
                    page += "&pageToken=" + quote(token, safe="")
                status, data = rest.call("GET", page, ok=(200, 404))
                if status == 404:
                    break
                pages += 1
                names = [o["name"] for o in (data or {}).get("items", [])]
                if names and not module.check_mode:
                    list(pool.map(delete, enumerate(names)))
                deleted += len(names)
                token = (data or {}).get("nextPageToken")
                if not token:
                    break
    except GcpError as e:
        module.fail_json(msg=str(e), deleted=deleted, pages=pages)
    module.exit_json(
        changed=deleted > 0,
        deleted=deleted,
        pages=pages,
        seconds=round(time.monotonic() - started, 2),
    )


if __name__ == "__main__":
    main()
