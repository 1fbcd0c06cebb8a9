package fhirsource

import "os"

// osMkdirTemp makes the shared sample directory (removed with the process's
// temp files; the sample is reused by every test of the package).
func osMkdirTemp() (string, error) { return os.MkdirTemp("", "fhirsource-sample-") }
