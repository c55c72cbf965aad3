"""Optical flow: DIS / Farneback / RAFT flow for frame folders, trees and videos, and its colour coding."""
