from visionax.losses.contrastive import info_nce, nt_xent
from visionax.losses.classification import softmax_cross_entropy, svm_hinge
from visionax.losses.penalties import decay_mask, elastic_net, l1, l2
from visionax.losses.sequence import temporal_softmax_loss

__all__ = ["decay_mask", "elastic_net", "info_nce", "l1", "l2", "nt_xent", "softmax_cross_entropy", "svm_hinge",
           "temporal_softmax_loss"]
