module boxlite

go 1.22
