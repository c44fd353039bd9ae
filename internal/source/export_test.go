package source

// ExcerptForTest exposes excerpt to the external tests.
var ExcerptForTest = excerpt
