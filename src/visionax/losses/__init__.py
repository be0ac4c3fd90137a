from visionax.losses.contrastive import info_nce, nt_xent
