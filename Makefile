# Release builds. Everything here is a thin front for the scripts in dist/,
# which say what they do at their top.
#
#   make release        static, reproducible binaries for linux/amd64 and arm64
#   make man            the man pages (docs/man/*.md through go-md2man)
#   make deb            Debian packages for amd64 and arm64
#   make check-reproducible   build twice, compare the bytes
#   make clean
#
# Outputs land in dist/out/. The version comes from the VERSION file.

.PHONY: release man deb check-reproducible clean

release:
	dist/build amd64 arm64

man:
	dist/man

deb:
	dist/mkdeb amd64 arm64

check-reproducible:
	dist/check-reproducible amd64

clean:
	rm -rf dist/out
