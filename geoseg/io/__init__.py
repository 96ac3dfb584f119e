"""Reading and writing files: rasters (local or remote), band stacks, Cloud-Optimised GeoTIFFs,
polygon files, and outputs staged so that an interrupted run never leaves one half-written."""
