from visionax.losses.adversarial import discriminator_loss, generator_loss, ls_discriminator_loss, ls_generator_loss
from visionax.losses.contrastive import clip_loss, cpc_accuracy, cpc_info_nce, info_nce, nt_xent
from visionax.losses.classification import softmax_cross_entropy, svm_hinge
from visionax.losses.penalties import decay_mask, elastic_net, l1, l2
from visionax.losses.sequence import temporal_softmax_loss

__all__ = ["clip_loss", "cpc_accuracy", "cpc_info_nce", "decay_mask", "discriminator_loss", "elastic_net", "generator_loss", "info_nce",
           "l1", "l2", "ls_discriminator_loss", "ls_generator_loss", "nt_xent", "softmax_cross_entropy",
           "svm_hinge", "temporal_softmax_loss"]
