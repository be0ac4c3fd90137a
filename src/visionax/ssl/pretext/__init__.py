"""Pretext tasks of lecture 13: labels made from the images themselves, solved by an encoder whose
features are then evaluated like SimCLR's. Rotation prediction (Gidaris et al. 2018):
`visionax.ssl.pretext.rotation`; relative patch position (Doersch et al. 2015):
`visionax.ssl.pretext.relative_position` (both update through the one classification step of
`visionax.ssl.pretext.step`); context encoder inpainting (Pathak et al. 2016):
`visionax.ssl.pretext.context_encoder`; the split-brain autoencoder (Zhang et al. 2017):
`visionax.ssl.pretext.split_brain`; colourising video to learn tracking (Vondrick et al. 2018):
`visionax.ssl.pretext.video_colorization`."""
