"""Where each dataset the fetchers know comes from: URL and pinned sha256.

One entry per remote file (`RemoteFile`, with the members checked after
extraction for archives). Where each pin comes from is listed on the Data
page of the docs. `datasets.py` holds the fetchers that read these.
"""

from aiservice_kit._download import Member
from aiservice_kit._download import RemoteFile

#: Google's mirror of the official MNIST files (the one TensorFlow Datasets
#: downloads; its published sha256s).
MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
MNIST = {
    "train": (
        RemoteFile(
            MNIST_URL + "train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            size=9_912_422,
        ),
        RemoteFile(
            MNIST_URL + "train-labels-idx1-ubyte.gz",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            size=28_881,
        ),
    ),
    "t10k": (
        RemoteFile(
            MNIST_URL + "t10k-images-idx3-ubyte.gz",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            size=1_648_877,
        ),
        RemoteFile(
            MNIST_URL + "t10k-labels-idx1-ubyte.gz",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            size=4_542,
        ),
    ),
}

SMS_SPAM = RemoteFile(
    "https://archive.ics.uci.edu/ml/machine-learning-databases/00228/"
    "smsspamcollection.zip",
    "1587ea43e58e82b14ff1f5425c88e17f8496bfcdb67a583dbff9eefaf9963ce3",
    members=(
        Member(
            "SMSSpamCollection",
            "SMSSpamCollection",
            "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
        ),
        Member("readme", "readme"),
    ),
)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/"
MOVIELENS = {
    "latest-small": RemoteFile(
        GROUPLENS_URL + "ml-latest-small.zip",
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        size=978_202,
        members=tuple(
            Member(f"ml-latest-small/{name}", name, sha256)
            for name, sha256 in (
                (
                    "ratings.csv",
                    "aa289ca83157595d0df6aea1be6a4ded"
                    "676ddc4385472e8313a8ed9805352646",
                ),
                (
                    "movies.csv",
                    "5a5f32dd9bb3797b8e728a1b98958789"
                    "d2b13f294a69fdfbc5727f8a9611aa07",
                ),
                (
                    "tags.csv",
                    "92a9f8bb7916dceef6151209845788c3"
                    "643f794dfa79d1feaec7121b5960399d",
                ),
                (
                    "links.csv",
                    "97ad18e4e56a09363c65676b6cb3482c"
                    "e3e2cea2372a24620c1599c843325f31",
                ),
                (
                    "README.txt",
                    "63d22ac138e80fae37021797ed8e1b94"
                    "24b5239dc576a137422adf783ae3f404",
                ),
            )
        ),
    ),
    "100k": RemoteFile(
        GROUPLENS_URL + "ml-100k.zip",
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        size=4_924_029,
        members=tuple(
            Member(f"ml-100k/{name}", name)
            for name in ("u.data", "u.item", "u.user", "u.genre", "README")
        ),
    ),
    "1m": RemoteFile(
        GROUPLENS_URL + "ml-1m.zip",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        size=5_917_549,
        members=tuple(
            Member(f"ml-1m/{name}", name)
            for name in ("ratings.dat", "movies.dat", "users.dat", "README")
        ),
    ),
}

#: The sktime repository's copies of the UCR/UEA archive files, at a fixed
#: commit: timeseriesclassification.com publishes no checksums of its zips.
SKTIME_DATA_URL = (
    "https://raw.githubusercontent.com/sktime/sktime/"
    "7bd7d1620c0656f3210eeb850bb1c0034159ee47/sktime/datasets/data/"
)
UCR_UEA = {
    # name: ((train sha256, bytes), (test sha256, bytes))
    "ArrowHead": (
        (
            "a83c470aaf611a5f5284377cce27a5fc9f6292bc3d110257b0fd4905ced5ee72",
            100_357,
        ),
        (
            "5417dab42626d41df5e435bb22458c2df40dfad4bcd3b59559bbe72e20e84904",
            484_894,
        ),
    ),
    "BasicMotions": (
        (
            "8dc43cc6306cb679c888c01e26f91772ac4441a916da43bac8b79734a538b9d6",
            227_790,
        ),
        (
            "79213102bc6fca1a398ad98ce1185dff0208fa3d1465e687f48288946b0ff8dc",
            227_713,
        ),
    ),
    "GunPoint": (
        (
            "f842401779fd9800d247d8b33121a1a4643710a19b24917dbdd9a060ca8630d5",
            84_188,
        ),
        (
            "79332750788a6227b325b96bd0d70130c8eb707b9731f8d7dec62b7a7d36017e",
            252_305,
        ),
    ),
    "ItalyPowerDemand": (
        (
            "341269cb7e6cef96846b30e774580beec79addb93848ba360145219115a74b7c",
            18_300,
        ),
        (
            "26122451f87dd0387ef90b18bc8a86c041371b8a1c068004922b939971247144",
            274_054,
        ),
    ),
}

ONLINE_SHOPPING = RemoteFile(
    "https://raw.githubusercontent.com/SophonPlus/ChineseNlpCorpus/"
    "a0b781d72158bde242c0626c9e354d2b328865ff/datasets/"
    "online_shopping_10_cats/online_shopping_10_cats.zip",
    "6816ded66fde9d0927ecbd370b5e12d0174d1abac35192ec014ac2a0a8d25858",
    size=4_084_428,
    members=(
        Member(
            "online_shopping_10_cats.csv",
            "online_shopping_10_cats.csv",
            "f6c5b724122d8547b700ac4524898eb7e28abbee63f798e95a8faa408829afdb",
        ),
    ),
)
