from visionax.losses.contrastive import info_nce, nt_xent
from visionax.losses.classification import softmax_cross_entropy, svm_hinge
from visionax.losses.penalties import decay_mask, elastic_net, l1, l2
