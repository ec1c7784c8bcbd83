"""Reference for the tests: PyMVPA 2.6's Procrustes mapper, transcribed literally."""

import numpy as np


class ProcrusteanMapper:
    """PyMVPA 2.6 ProcrusteanMapper._train, transcribed (full SVD, zero-padding)."""

    def __init__(self, scaling=True):
        self.scaling = scaling

    def train(self, source, target):
        self.offset_in, self.offset_out = source.mean(axis=0), target.mean(axis=0)
        datas = [source - self.offset_in, target - self.offset_out]
        (sn, sm), (_, tm) = datas[0].shape, datas[1].shape
        norms = [np.sqrt(np.sum(d**2)) for d in datas]
        src, tgt = [d / nrm for d, nrm in zip(datas, norms, strict=True)]
        if sm < tm:
            src = np.hstack((src, np.zeros((sn, tm - sm))))
        if sm > tm:
            tgt = np.hstack((tgt, np.zeros((sn, sm - tm))))
        U, s, Vh = np.linalg.svd(tgt.T @ src, full_matrices=False)
        T = (Vh.T @ U.T)[:sm, :tm]
        scale = s.sum() * norms[1] / norms[0]
        self.proj = scale * T if self.scaling else T
        return self

    def forward(self, x):
        return (x - self.offset_in) @ self.proj + self.offset_out
