"""CelebAMask-HQ's on-disk layout: where each image and part mask lives.

The same relative paths apply to a folder and to the official zip (whose entries sit under a
top-level ``CelebAMask-HQ/`` folder), so every reader goes through these helpers.
"""

# Official part order. Codebases that build label maps paint parts in this order, so later parts
# (hair, hat, ...) cover earlier ones (eyes, lips); see ``eyelip.data.fuse``.
PARTS: tuple[str, ...] = (
    "skin",
    "nose",
    "eye_g",
    "l_eye",
    "r_eye",
    "l_brow",
    "r_brow",
    "l_ear",
    "r_ear",
    "mouth",
    "u_lip",
    "l_lip",
    "hair",
    "hat",
    "ear_r",
    "neck_l",
    "neck",
    "cloth",
)

IMAGE_DIR = "CelebA-HQ-img"
MASK_DIR = "CelebAMask-HQ-mask-anno"
# Ids per mask sub-folder: CelebAMask-HQ-mask-anno/{id // 2000}/...
MASKS_PER_FOLDER = 2000


def image_relpath(sample_id: int) -> str:
    return f"{IMAGE_DIR}/{sample_id}.jpg"


def mask_relpath(sample_id: int, part: str) -> str:
    return f"{MASK_DIR}/{sample_id // MASKS_PER_FOLDER}/{sample_id:05d}_{part}.png"


# Parts that swap under a horizontal flip (l_lip/u_lip are lower/upper, not left/right).
MIRROR: dict[str, str] = {
    "l_eye": "r_eye",
    "r_eye": "l_eye",
    "l_brow": "r_brow",
    "r_brow": "l_brow",
    "l_ear": "r_ear",
    "r_ear": "l_ear",
}


def mirror_pairs(targets: dict[str, list[str]]) -> list[tuple[int, int]]:
    """Channel pairs that swap under a horizontal flip, from the targets' parts.

    A target whose parts are their own mirror image (``eyes_lips``, ``eyes``) stays put; a target
    that keeps one side apart (``left_eye: [l_eye]``) swaps with the target holding the mirrored
    parts. Without such a partner a flip would mislabel it, so that is an error.
    """
    parts = [frozenset(p) for p in targets.values()]
    names = list(targets)
    pairs: list[tuple[int, int]] = []
    for i, own in enumerate(parts):
        mirrored = frozenset(MIRROR.get(p, p) for p in own)
        if mirrored == own:
            continue
        if mirrored not in parts:
            raise ValueError(
                f"train.augment.hflip: target {names[i]!r} keeps {sorted(own)} apart from their mirror "
                f"image and no target holds {sorted(mirrored)}; add that target or set hflip: 0"
            )
        j = parts.index(mirrored)
        if i < j:
            pairs.append((i, j))
    return pairs
