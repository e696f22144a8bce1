"""CelebAMask-HQ's on-disk layout: where each image and part mask lives.

The same relative paths apply to a folder and to the official zip (whose entries sit under a
top-level ``CelebAMask-HQ/`` folder), so every reader goes through these helpers.
"""

# Official part order. Codebases that build label maps paint parts in this order, so later parts
# (hair, hat, ...) cover earlier ones (eyes, lips); see ``eyelip.fuse``.
PARTS: tuple[str, ...] = (
    "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
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
MIRROR: dict[str, str] = {"l_eye": "r_eye", "r_eye": "l_eye", "l_brow": "r_brow", "r_brow": "l_brow",
                          "l_ear": "r_ear", "r_ear": "l_ear"}
