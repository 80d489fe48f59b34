"""The settings of each reader: one dataclass a reader, the ``<reader>.*`` sections of
:class:`~wearspec.data.prepare.PrepareConfig` (e.g. ``generic.channels=[ax,ay,az]``).

They live next to the readers (not in :mod:`wearspec.config`, the generic typed loader) so that the
loader depends on nothing in :mod:`wearspec.data`. Dataclasses and defaults here (with a ``validate``
where a value can be checked alone); each reader checks the rest when it opens its input, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wearspec.errors import WearspecError


@dataclass
class GenericConfig:
    """Generic inputs.

    * numpy: a folder with ``X.npy`` (n, C, T) windows, optional ``Y.npy`` labels (n,) and
      ``P.npy`` (or ``pid.npy``) subject ids (n,); ``rate`` is required.
    * CSV/Parquet: one file per recording (or a folder of them), one row per sample, a time column,
      one column per channel, optional label/subject/recording columns.
    """

    time_column: str = "time"
    time_unit: str = "s"  # s | ms | us | ns | datetime
    subject_column: str = "subject"
    recording_column: str = "recording"
    label_column: str = "label"
    channels: list[str] = field(default_factory=list)  # empty: every other numeric column
    labels: list[str] = field(default_factory=list)  # allowed labels; empty: any seen
    rate: float | None = None  # native rate in Hz; None: from timestamps
    max_gap_s: float = 1.0

    def validate(self) -> None:
        if self.rate is not None and not self.rate > 0:
            raise WearspecError(f"generic.rate: expected a positive rate in Hz or null (from timestamps), "
                                f"got {self.rate}")
        if not self.max_gap_s > 0:
            raise WearspecError(f"generic.max_gap_s: expected a positive number of seconds, got {self.max_gap_s}")


@dataclass
class Pamap2Config:
    """PAMAP2 Protocol files: which IMUs (hand, chest, ankle) and which of their sensors
    (temperature, acc16, acc6, gyro, mag); ``include_optional`` also reads ``Optional/`` when the
    input is the ``PAMAP2_Dataset`` folder."""

    imus: list[str] = field(default_factory=lambda: ["hand"])
    sensors: list[str] = field(default_factory=lambda: ["acc16", "gyro"])
    include_optional: bool = False


@dataclass
class Capture24Config:
    """Capture-24: which column of annotation-label-dictionary.csv maps annotations to labels."""

    annotation_column: str = "label:Walmsley2020"
    dictionary: str = "annotation-label-dictionary.csv"


@dataclass
class DaphnetConfig:
    """Daphnet FoG: sensor locations (ankle, thigh, trunk)."""

    sensors: list[str] = field(default_factory=lambda: ["ankle", "thigh", "trunk"])


@dataclass
class UciHarConfig:
    """UCI-HAR Inertial Signals: signal groups and the dataset's own train/test splits to read."""

    signals: list[str] = field(default_factory=lambda: ["total_acc", "body_gyro"])
    splits: list[str] = field(default_factory=lambda: ["train", "test"])


@dataclass
class AudioConfig:
    """Folders of WAV clips. Labels from a CSV (ESC-50 style) or from sub-folder names (Speech
    Commands style, with ``validation_list.txt``/``testing_list.txt`` when present)."""

    labels_csv: str = ""  # e.g. meta/esc50.csv, relative to the input folder
    audio_dir: str = "audio"  # where the CSV's files live, relative to the input folder
    filename_column: str = "filename"
    label_column: str = "category"
    fold_column: str = "fold"  # folds become the 'subject' so that leave-one-subject-out = k-fold CV


@dataclass
class SyntheticConfig:
    """The embedded default data: simulated wrist IMU (accelerometer + gyroscope) recordings."""

    subjects: int = 24
    minutes_per_subject: float = 6.0
    rate: float = 50.0
    seed: int = 0
    activities: list[str] = field(
        default_factory=lambda: ["lying", "sitting", "standing", "walking", "running", "stairs", "cycling"]
    )
    unlabelled_subjects: int = 0  # extra subjects stored without labels (pretraining pool)
    channels: str = "all"  # all (acc + gyro) | acc | gyro


@dataclass
class DeviceConfig:
    """Raw accelerometer device files read with actfast: Axivity .cwa (AX3; AX6 with gyroscope),
    ActiGraph .gt3x, GENEActiv .bin. One file is one subject's recording; the subject comes from the
    file name (``subject_pattern``, a regular expression searched in it: its group ``subject``, else
    its first group, else the whole match) or from ``subjects_csv`` (columns ``file,subject``; file
    names, or paths relative to the input folder)."""

    subject_pattern: str = r"^[^_.\s]+"  # e.g. P012_wrist.cwa → P012
    subjects_csv: str = ""
    gyroscope: bool = False  # add gx, gy, gz (°/s); every file must then have a gyroscope (AX6)
    max_gap_s: float = 1.0  # a longer pause between samples splits the recording: no window straddles it
    annotations_csv: str = ""  # labels: columns subject,start,end,label (ISO times in the device's clock)
    calibrate: bool = False  # gravity autocalibration: sphere fit on still periods (van Hees 2014)
    nonwear: str = "off"  # off | flag (periods in the manifest) | drop (their samples become missing)
    nonwear_window_s: float = 3600.0  # non-wear: ≥ 2 axes with SD < 13 mg or range < 50 mg over this long

    def validate(self) -> None:
        if self.nonwear not in ("off", "flag", "drop"):
            raise WearspecError(f"device.nonwear: expected off, flag or drop, got {self.nonwear!r}")
        if not self.max_gap_s > 0 or not self.nonwear_window_s > 0:
            raise WearspecError("device.max_gap_s and device.nonwear_window_s: expected positive seconds")
