"""Networks: tensors in, dose out. They know nothing of files or datasets."""

from custom_nets.networks.cascade_unet import CascadeUNet, DoseUNet
from custom_nets.networks.checkpoints import (check_checkpoint, describe_state, load_state_dict_file,
                                             parameters_stored_as)
from custom_nets.networks.dose_mask_cascade import DoseMaskCascade
from custom_nets.networks.factory import build_dose_network
from custom_nets.networks.initialisation import build_uninitialised, random_weights_
from custom_nets.networks.randose import RANDose

__all__ = ["CascadeUNet", "DoseMaskCascade", "DoseUNet", "RANDose", "build_dose_network", "build_uninitialised",
           "check_checkpoint", "describe_state", "load_state_dict_file", "parameters_stored_as", "random_weights_"]
