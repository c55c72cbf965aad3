"""DAVIS-2016 evaluation (J, F, T) reproducing the MATLAB toolbox; see eval/davis16.py."""
