"""Sequence lists of the DAVIS-2016 MATLAB toolbox (db_util/db_seqs.m)."""
from __future__ import annotations

VAL_SEQUENCES = (
    "blackswan", "bmx-trees", "breakdance", "camel", "car-roundabout", "car-shadow", "cows",
    "dance-twirl", "dog", "drift-chicane", "drift-straight", "goat", "horsejump-high",
    "kite-surf", "libby", "motocross-jump", "paragliding-launch", "parkour", "scooter-black",
    "soapbox",
)

# "sequences where stability is not computed (occlusions, etc.)": never part of the T average
UNSTABLE_SEQUENCES = frozenset({
    "lucia", "rollerblade", "mallard-fly", "bmx-bumps", "goat", "scooter-gray", "bmx-trees",
    "dance-twirl", "motocross-jump", "soccerball", "breakdance", "dog", "horsejump-high",
    "motorbike", "breakdance-flare", "dog-agility", "horsejump-low", "paragliding",
    "drift-chicane", "swing", "parkour", "tennis", "libby",
})

SETS = {"val": VAL_SEQUENCES}
