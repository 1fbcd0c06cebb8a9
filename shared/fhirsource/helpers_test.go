package fhirsource

import (
	"bytes"
	"encoding/json"
	"os"
)

// osMkdirTemp makes the shared sample directory (removed with the process's
// temp files; the sample is reused by every test of the package).
func osMkdirTemp() (string, error) { return os.MkdirTemp("", "fhirsource-sample-") }

func jsonIndent(dst *bytes.Buffer, src []byte) error { return json.Indent(dst, src, "", "  ") }
