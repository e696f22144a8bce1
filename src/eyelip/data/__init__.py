"""Raw CelebAMask-HQ files to training arrays: layout, reading, fusing, resizing, priors, splits."""
