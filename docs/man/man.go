// Package man holds the manual pages' Markdown sources (rendered by
// dist/man) so that qmgate can quote them: `qmgate config print -doc`
// describes every key in qmgate.toml(5)'s own words.
package man

import _ "embed"

// ConfigReference is qmgate.toml(5), the reference of every configuration key.
//
//go:embed qmgate.toml.5.md
var ConfigReference string
