package evloop

import "iter"

// Member makes a type an element of a Set: embed it.
type Member struct{ pos int } // 1 + the index in the Set; 0: not in one

func (m *Member) member() *Member { return m }

// In reports whether the element is in a Set.
func (m *Member) In() bool { return m.pos != 0 }

// Set is the connections of an engine that its tick looks at (those with
// a request in flight, or waiting for a server): adding and removing are
// O(1) with no hashing, since they happen per request, and All may be
// ranged over while what it yields adds or removes elements. An element
// is in at most one Set. Not for concurrent use.
type Set[T interface {
	comparable
	member() *Member
}] struct {
	items   []T
	ranging []T // All's copy, reused
}

// Add puts x in s; nothing if it is in already.
func (s *Set[T]) Add(x T) {
	m := x.member()
	if m.pos == 0 {
		s.items = append(s.items, x)
		m.pos = len(s.items)
	}
}

// Remove takes x out of s; nothing if it is not in.
func (s *Set[T]) Remove(x T) {
	m := x.member()
	if m.pos == 0 {
		return
	}
	var zero T
	last := s.items[len(s.items)-1]
	s.items[m.pos-1], last.member().pos = last, m.pos
	s.items[len(s.items)-1] = zero
	s.items = s.items[:len(s.items)-1]
	m.pos = 0
}

// Len is how many elements s holds.
func (s *Set[T]) Len() int { return len(s.items) }

// All yields the elements of s as All began, skipping those removed
// meanwhile; the caller's loop may add and remove elements. Not
// reentrant.
func (s *Set[T]) All() iter.Seq[T] {
	return func(yield func(T) bool) {
		s.ranging = append(s.ranging[:0], s.items...)
		defer clear(s.ranging)
		for _, x := range s.ranging {
			if x.member().pos != 0 && !yield(x) {
				return
			}
		}
	}
}
