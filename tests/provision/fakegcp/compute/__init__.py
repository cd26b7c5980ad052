"""Compute Engine v1, one module per area:

    refs.py            keys, selfLinks, references, the platform catalogue
    operations.py      zonal/regional/global operations (PENDING, RUNNING, DONE)
    generic.py         CRUD for every collection + the per-collection hook tables
    filters.py         the `filter` expression of list calls
    networks.py        networks, subnetworks, firewalls, routers
    instances.py       VM instances and their disks
    load_balancing.py  instance groups, health checks, backend services, URL maps,
                       target proxies, addresses, forwarding rules
    ssl.py             SSL policies and certificates
    platform.py        zones, regions, machine types, images, the project

Importing the package registers every handler and hook.
"""

from . import (  # noqa: F401
    filters,
    generic,
    instances,
    load_balancing,
    networks,
    operations,
    platform,
    refs,
    ssl,
)
