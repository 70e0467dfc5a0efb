"""Training settings that leave the weights unchanged (no torch: the workflow imports it).

They stay out of a training rule's params and out of the resume key of its checkpoint (a
resumed run equals an uninterrupted one bit for bit), so changing them re-trains nothing; the
job reads them from the config.
"""

PERSISTENCE_SETTINGS = ("checkpoint_every",)  # of a diffusion model's ``train`` section
