"""Labels to masks: vector layers (any CRS) and label rasters burned onto any chip grid, with
the boundary and distance targets of parcels."""
