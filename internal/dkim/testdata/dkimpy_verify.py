# Verifies every DKIM-Signature of a message with dkimpy, the public keys
# given on the command line instead of DNS.
# usage: dkimpy_verify.py MESSAGE-FILE NAME=TXT...   (NAME: sel._domainkey.dom)
# Prints one line per signature: "<index> pass" or "<index> fail".
import sys
import dkim

msg = open(sys.argv[1], "rb").read()
records = {}
for a in sys.argv[2:]:
    name, txt = a.split("=", 1)
    records[name.lower().rstrip(".")] = txt.encode()

def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return records.get(name.lower().rstrip("."))

d = dkim.DKIM(msg)
n = sum(1 for k, v in d.headers if k.lower() == b"dkim-signature")
for i in range(n):
    ok = d.verify(idx=i, dnsfunc=dnsfunc)
    print(i, "pass" if ok else "fail")
