package config

// ExpandEnv expands ${VAR} and ${VAR:-default} in s the way the
// configuration file's values are expanded ("$$" is a literal "$"); a
// reference to an unset variable without a default is an error.
func ExpandEnv(s string, lookupEnv func(string) (string, bool)) (string, error) {
	return expandEnv(s, lookupEnv)
}
