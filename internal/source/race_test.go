//go:build race

package source_test

func init() { raceEnabled = true }
