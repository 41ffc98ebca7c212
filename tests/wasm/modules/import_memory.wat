;; Refused at upload: a module may import only functions.
(module (import "sandpool" "memory" (memory 1)))
