package queue

func bigPut() {}
