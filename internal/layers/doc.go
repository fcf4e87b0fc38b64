// Package layers holds no code: its test checks that the module's packages
// import each other in one direction only, as ARCHITECTURE.md draws it, by
// asking `go list` what each package imports.
package layers
