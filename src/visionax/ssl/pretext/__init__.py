"""Pretext tasks of lecture 13: labels made from the images themselves, solved by an encoder whose
features are then evaluated like SimCLR's. Rotation prediction (Gidaris et al. 2018):
`visionax.ssl.pretext.rotation`; relative patch position (Doersch et al. 2015):
`visionax.ssl.pretext.relative_position`. Both update through the one classification step of
`visionax.ssl.pretext.step`."""
