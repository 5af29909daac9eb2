"""The spectral library: per-class endmember signatures, cloud and snow spectra, land covers.

S2 signatures are L2A reflectance x 10000 for B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12,
S1 ones (VV, VH) backscatter in dB. Bright industrial roofs share the spectral shape of clouds,
as on real Sentinel-2 scenes: this is what lets the seed paper's optical OOD detector, trained on
intensity-augmented urban/industrial patches, flag clouds.
"""
from __future__ import annotations

ENDMEMBERS = {
    #                  B01   B02   B03   B04   B05   B06   B07   B08   B8A   B09   B11   B12     VV     VH
    "green_crop":     ((250, 300, 620, 330, 1000, 2700, 3400, 3700, 3800, 3600, 2000, 950), (-11.0, -17.5)),
    "bare_soil":      ((900, 1100, 1400, 1700, 1900, 2100, 2300, 2400, 2500, 2400, 3000, 2400), (-12.5, -21.0)),
    "orchard_canopy": ((300, 380, 650, 450, 1100, 2400, 3000, 3250, 3350, 3200, 2200, 1200), (-10.0, -16.5)),
    "orchard_soil":   ((750, 950, 1200, 1450, 1700, 1950, 2100, 2200, 2300, 2250, 2850, 2250), (-12.0, -20.0)),
    "pasture":        ((220, 280, 640, 330, 1080, 3000, 3800, 4100, 4200, 4000, 2150, 1000), (-12.0, -19.0)),
    "dry_grass":      ((450, 600, 900, 950, 1400, 2200, 2550, 2700, 2800, 2700, 2900, 1950), (-13.0, -20.5)),
    "broadleaf":      ((180, 220, 450, 240, 750, 2500, 3200, 3450, 3550, 3350, 1600, 680), (-8.0, -14.0)),
    "conifer":        ((150, 180, 330, 190, 540, 1500, 1850, 2000, 2100, 2000, 950, 420), (-7.5, -13.5)),
    "canopy_shadow":  ((110, 130, 230, 130, 380, 1000, 1250, 1350, 1400, 1350, 650, 300), (-9.0, -15.5)),
    "shrub":          ((250, 310, 560, 420, 880, 2000, 2400, 2600, 2700, 2600, 1800, 900), (-10.0, -16.0)),
    "heather":        ((320, 400, 560, 580, 950, 1650, 1950, 2100, 2200, 2100, 1850, 1100), (-11.0, -18.0)),
    "sparse_soil":    ((800, 1000, 1250, 1350, 1600, 1900, 2100, 2250, 2350, 2300, 3000, 2450), (-13.5, -22.0)),
    "roof":           ((1300, 1400, 1500, 1600, 1700, 1800, 1850, 1900, 1950, 1900, 2100, 1800), (5.0, -7.0)),
    "industrial_roof": ((2000, 2200, 2350, 2450, 2500, 2550, 2600, 2650, 2700, 2600, 2900, 2600), (6.0, -7.5)),
    # white membrane / metal roofs of industrial halls: a cloud-like spectrum (bright and flat in
    # the VNIR, lower in the SWIR), the classic false cloud of Sentinel-2 cloud masks
    "white_roof":     ((4300, 4600, 4500, 4550, 4600, 4650, 4650, 4600, 4600, 3700, 3300, 2400), (6.5, -7.0)),
    "garden":         ((350, 450, 700, 600, 1050, 2000, 2350, 2500, 2600, 2500, 2100, 1300), (-4.0, -11.0)),
    "asphalt":        ((900, 1000, 1100, 1200, 1300, 1350, 1400, 1450, 1500, 1450, 1700, 1500), (-10.0, -18.0)),
    "sand":           ((1600, 1900, 2300, 2600, 2800, 3000, 3150, 3300, 3400, 3300, 4100, 3500), (-16.0, -24.0)),
    "wet_sand":       ((900, 1050, 1300, 1450, 1550, 1650, 1700, 1750, 1800, 1700, 1500, 1100), (-18.0, -26.0)),
    "marsh_veg":      ((250, 300, 550, 380, 800, 1700, 2000, 2150, 2200, 2100, 1200, 600), (-12.0, -19.0)),
    "salt_marsh":     ((400, 500, 700, 650, 900, 1300, 1450, 1500, 1550, 1450, 1300, 800), (-14.0, -22.0)),
    "salt_pan":       ((2500, 2800, 3000, 3100, 3100, 3100, 3100, 3100, 3100, 3000, 2400, 1800), (-17.0, -26.0)),
    "inland_water":   ((350, 420, 560, 320, 280, 200, 180, 150, 130, 100, 60, 40), (-22.0, -28.0)),
    "turbid_water":   ((450, 520, 750, 550, 600, 350, 300, 260, 220, 180, 90, 60), (-21.0, -27.5)),
    "sea_water":      ((480, 520, 380, 160, 120, 90, 80, 70, 60, 50, 30, 20), (-20.0, -29.0)),
    "sea_wave":       ((520, 560, 420, 190, 150, 110, 100, 90, 80, 70, 40, 30), (-17.0, -27.0)),
    "rock":           ((1500, 1700, 1950, 2150, 2300, 2400, 2500, 2600, 2700, 2600, 3300, 2800), (-10.0, -19.0)),
    "burnt":          ((400, 480, 600, 700, 900, 1100, 1250, 1300, 1350, 1300, 2200, 2100), (-12.0, -20.0)),
}
CLOUD = (7000, 7600, 7400, 7500, 7600, 7700, 7700, 7600, 7600, 6000, 5500, 4000)
SNOW = (8000, 8800, 8700, 8500, 8300, 8000, 7800, 7500, 7200, 6000, 600, 450)

# A land cover = (endmember a, endmember b, texture, mean fraction of b).
COVERS = {
    0: ("roof", "garden", "blocks", 0.25),                  # urban fabric
    1: ("white_roof", "asphalt", "big_blocks", 0.3),        # industrial or commercial units
    2: ("green_crop", "bare_soil", "stripes", 0.5),         # arable land
    3: ("orchard_canopy", "orchard_soil", "rows", 0.5),     # permanent crops
    4: ("pasture", "dry_grass", "smooth", 0.25),            # pastures
    5: ("green_crop", "orchard_soil", "parcels", 0.5),      # complex cultivation patterns
    6: ("pasture", "broadleaf", "mottled", 0.5),            # agriculture with natural vegetation
    7: ("dry_grass", "broadleaf", "scattered", 0.35),       # agro-forestry
    8: ("broadleaf", "canopy_shadow", "canopy", 0.3),       # broad-leaved forest
    9: ("conifer", "canopy_shadow", "canopy", 0.4),         # coniferous forest
    10: ("broadleaf", "conifer", "mottled_fine", 0.5),      # mixed forest
    11: ("dry_grass", "sparse_soil", "smooth", 0.3),        # natural grassland, sparse vegetation
    12: ("heather", "dry_grass", "mottled", 0.3),           # moors, heathland
    13: ("shrub", "dry_grass", "scattered", 0.4),           # transitional woodland, shrub
    14: ("sand", "wet_sand", "smooth", 0.35),               # beaches, dunes, sands
    15: ("marsh_veg", "inland_water", "mottled", 0.4),      # inland wetlands
    16: ("salt_marsh", "salt_pan", "mottled", 0.4),         # coastal wetlands
    17: ("inland_water", "turbid_water", "smooth", 0.3),    # inland waters
    18: ("sea_water", "sea_wave", "waves", 0.3),            # marine waters
}
# Covers of the 43-class names that the 19-class nomenclature drops.
DROPPED_COVERS = {
    "Road and rail networks and associated land": ("asphalt", "dry_grass", "stripes", 0.5),
    "Port areas": ("industrial_roof", "sea_water", "big_blocks", 0.4),
    "Airports": ("asphalt", "dry_grass", "big_blocks", 0.5),
    "Mineral extraction sites": ("rock", "sparse_soil", "smooth", 0.4),
    "Dump sites": ("sparse_soil", "asphalt", "mottled", 0.4),
    "Construction sites": ("bare_soil", "roof", "blocks", 0.3),
    "Green urban areas": ("pasture", "roof", "scattered", 0.2),
    "Sport and leisure facilities": ("pasture", "asphalt", "parcels", 0.3),
    "Bare rock": ("rock", "sparse_soil", "mottled", 0.3),
    "Burnt areas": ("burnt", "sparse_soil", "mottled", 0.3),
    "Intertidal flats": ("wet_sand", "sea_water", "mottled", 0.4),
}
# How much of a snow pack stays visible through each cover's canopy (default 0.95).
SNOW_VISIBILITY = {7: 0.8, 8: 0.65, 9: 0.6, 10: 0.65, 13: 0.8}

