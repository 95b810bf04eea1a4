package inject

// PodSpecPath is where an object of kind keeps its pod spec (keys from
// the object's root); false for kinds without one.
func PodSpecPath(kind string) ([]string, bool) {
	p, ok := podSpecPath[kind]
	return p, ok
}
