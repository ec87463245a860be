"""The model fleet: versions with lineage (fine-tuning and from-scratch series, numeric
and edited versions, a second architecture) and named fleets of them."""

from pipeline.fleet.registry import (
    Fleet,
    FleetMember,
    Lineage,
    lineage_chain,
    list_fleets,
    list_versions,
    load_fleet,
    read_lineage,
    register_version,
    save_fleet,
    scan_versions,
    version_dir,
)

__all__ = [
    "Fleet", "FleetMember", "Lineage", "lineage_chain", "list_fleets", "list_versions", "load_fleet",
    "read_lineage", "register_version", "save_fleet", "scan_versions", "version_dir",
]
