# Verifies every DKIM-Signature of some messages with dkimpy, the public keys
# given in a JSON file instead of DNS (one process for many messages, since
# starting Python and importing dkimpy is the slow part).
# usage: dkimpy_verify.py JOB.json
#   JOB: {"records": {"sel._domainkey.dom": "v=DKIM1; ..."}, "messages": [FILE, ...]}
# Prints one line per message: FILE followed by "pass" or "fail" per signature.
import json
import sys

import dkim

job = json.load(open(sys.argv[1]))
records = {k.lower().rstrip("."): v.encode() for k, v in job["records"].items()}


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return records.get(name.lower().rstrip("."))


for path in job["messages"]:
    d = dkim.DKIM(open(path, "rb").read())
    n = sum(1 for k, v in d.headers if k.lower() == b"dkim-signature")
    res = []
    for i in range(n):
        try:
            ok = d.verify(idx=i, dnsfunc=dnsfunc)
        except dkim.ValidationError as e:
            ok = False
            print("#", path, i, e, file=sys.stderr)
        res.append("pass" if ok else "fail")
    print(path, *res)
